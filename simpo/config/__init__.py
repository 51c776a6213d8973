"""On top: what the entry points share (resolvers, building config sections, the objective) and the checks of a
composed config."""
