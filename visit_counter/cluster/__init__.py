"""Redis Cluster as the storage engine (REDIS_MODE=cluster, issue 11).

The engine sees the whole cluster as one node, `CLUSTER_NODE`: one outbox, one
reset floor, one applied-mark field per writer (kept per hash slot on the
cluster, see slots.py). Its topology is fixed: the cluster places, moves and
fails over the slots by itself.
"""

CLUSTER_NODE = "cluster"
CLUSTER_TOPOLOGY_VERSION = 1
