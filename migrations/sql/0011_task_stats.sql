-- per-minute task statistics and counters that outlive pruning (to be written).
SELECT 1;
