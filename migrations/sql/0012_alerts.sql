-- alert rule states, webhook deliveries and the reporting views (to be written).
SELECT 1;
