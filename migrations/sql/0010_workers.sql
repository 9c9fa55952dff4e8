-- the workers' own rows (host, pid, queues, concurrency, jobs done), kept after they stop (to be written).
SELECT 1;
