"""LightningDataModules and the on-disk format parsers they use."""
