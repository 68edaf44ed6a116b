"""The method's numeric kernels: numpy and faiss only, no Spark (tested without a session).

Assignment, partial sums, k-means++ and Lloyd (``kernels``, ``lloyd``), exact assignment
with bounds (``bounded_assign``), index-assisted assignment for large K
(``centroid_index``), the two-level init (``seeding``), the sparse reduce arithmetic
(``reduce``), water-filling (``waterfill``), whole levels that fit in one process
(``inprocess``), the one seed rule (``seeds``) and the balance measure (``balance``).
"""
