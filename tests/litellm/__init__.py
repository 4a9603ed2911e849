"""The LiteLLM proxy of tests/test_litellm.py: its config and its harness."""
