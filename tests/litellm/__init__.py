"""The LiteLLM proxy of tests/transport/test_litellm.py: its config and its harness."""
