"""Stage one: decode, augment and embed videos into the feature cache."""
