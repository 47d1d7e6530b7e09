"""Model parts: encoder, adapter, emotion extractor, frozen LLM, fusion, speech decoder, codec."""
