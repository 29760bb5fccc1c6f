"""Old command names that moved (``python -m mnms_groupdistil.data.synthetic`` is now
``python -m mnms_groupdistil.datasets.generate``); the datasets are in :mod:`mnms_groupdistil.datasets`."""
