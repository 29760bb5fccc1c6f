"""Old name of ``python -m mnms_groupdistil.tools.export``, which still runs it after saying where it went
(:mod:`mnms_groupdistil.moved`)."""
