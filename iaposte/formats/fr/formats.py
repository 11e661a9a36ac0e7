"""French dates as Django writes them, with seconds: support staff match admin times against logs."""

DATETIME_FORMAT = "j F Y H:i:s"
SHORT_DATETIME_FORMAT = "d/m/Y H:i:s"
TIME_FORMAT = "H:i:s"
