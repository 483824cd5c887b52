"""The chaos suite: taskgate on PostgreSQL under process kills and a database
outage, checked against a client's record of every acknowledged submission. The
driver (``driver.run``) serves the CI test and ``bench/chaos.py`` alike."""
