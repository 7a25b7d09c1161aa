"""Work on finished runs: rebuild one from run.json and a checkpoint, append evaluation sweeps
(FID/IS against truncation), and `harness fid` between image sources."""
