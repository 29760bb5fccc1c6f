"""Old name of ``python -m mnms_groupdistil.datasets.generate``, which still runs it after saying where it went
(:mod:`mnms_groupdistil.moved`)."""
