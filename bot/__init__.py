"""The core of tierzero: conversation model, pipeline, tier-0 agent, CLI and server."""
