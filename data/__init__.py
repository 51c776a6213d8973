"""Preference data: sources, chat-templated tokenisation, collation and the bundled assets."""
