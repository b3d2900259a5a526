"""Stage two: train a GRU on cached features, report, evaluate and predict (``framecache.train_model`` trains)."""
