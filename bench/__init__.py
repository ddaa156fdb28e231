"""flowcli benchmark: ``python bench/run.py`` (``make bench``). See bench/run.py."""
