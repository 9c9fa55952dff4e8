DROP TABLE IF EXISTS taskhub.alert_events;
DROP TABLE IF EXISTS taskhub.backups;
