"""Old name of ``python -m mnms_groupdistil.tools.report``, which still runs it after saying where it went
(:mod:`mnms_groupdistil.moved`)."""
