"""Starting runs: prepare and execute `harness run`, the paper's parallel stage layout, `harness
compare`, and the child-job runner they share."""
