"""The curation method on Spark: levels of k-means with resampling and splits
(``hierarchy``), hierarchical balanced sampling (``sampling``) and the command functions
(``commands``: validate, cluster, sample, run)."""
