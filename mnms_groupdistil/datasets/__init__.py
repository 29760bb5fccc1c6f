"""The datasets: one subpackage per dataset (reader of the real release, transforms, generated look-alike,
inference pieces), and what their readers and inference share."""
