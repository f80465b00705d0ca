//! `auto_llm`: an OpenAI-compatible chat-completions judge.
