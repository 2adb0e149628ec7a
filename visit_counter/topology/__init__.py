"""The node set: who the nodes are, which pages each holds, and moving pages between them."""
