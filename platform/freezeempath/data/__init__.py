"""Training input: the shard format, the streaming Ray Data pipeline (shards → log-mel rows) and collation
of rows into ``SpeechChatBatch`` on the train workers."""
