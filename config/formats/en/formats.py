# Django's English formats, with the time zone: every time is stored and shown in UTC (TIME_ZONE),
# and staff elsewhere would otherwise read "11:31 p.m." as their own time.
DATETIME_FORMAT = "N j, Y, P T"
SHORT_DATETIME_FORMAT = "m/d/Y P T"
