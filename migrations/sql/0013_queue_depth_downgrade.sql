DROP TABLE taskhub.queue_depth;
