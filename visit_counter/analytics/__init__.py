"""Per-page analytics kept on the nodes: key layout, periods, scripts and HyperLogLog unions."""
