"""DICOM reading and writing (files, series, multi-frame, compressed; series and SEG out)."""
