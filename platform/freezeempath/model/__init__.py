"""Model parts: encoder, adapter, emotion extractor, frozen LLM, fusion, speech decoder, composed by
``spoken_chat`` and built from config by ``build`` (the one reader of ``ModelConfig``)."""
