"""Cross-modality synthesis: MR -> CT (synthetic CT in HU) and CT -> MR, slice-wise 2D."""
