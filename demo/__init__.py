"""The Gradio app of Inside Forward: Chat, Inside forward, Generate step by step, Lessons."""
