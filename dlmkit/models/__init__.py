"""Model definitions and loaders (Dream, AR models, MDLM, self-spec, CLSD)."""
