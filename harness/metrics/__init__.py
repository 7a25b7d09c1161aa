"""Image metrics: FID (clean-fid), Inception Score, reconstruction MSE, 1-D power spectrum."""
