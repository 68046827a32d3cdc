"""rules/: the app's own rules, between the UI (demo/) and the explainer (explain/): what a user typed -> model inputs
and the work budgets (inputs.py), chat text as the Chatbot shows it (chat_markdown.py), figures -> PNG (png.py)."""
