"""HTTP adapters: Dify's app API, OpenAI's chat API and the operations endpoints."""
