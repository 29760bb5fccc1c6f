"""M&Ms cardiac cine MRI: the OpenDataset reader and splits, cine transforms, NIfTI and DICOM input, DICOM SR
output, per-patient inference and a generated look-alike cohort."""
