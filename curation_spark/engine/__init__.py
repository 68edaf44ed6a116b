"""The distributed k-means engine: a whole k-means in one barrier stage (``kmeans``), the
TCP mesh between its tasks (``exchange``), the init inside the stage (``seeding_stage``) or
as Spark jobs (``seeding_spark``), and a level's resampling steps run in the same stage
(``stage_resampling``)."""
