"""Old name of ``python -m mnms_groupdistil.tools.benchmark``, which still runs it after saying where it went
(:mod:`mnms_groupdistil.moved`)."""
