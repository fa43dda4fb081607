"""Control decisions as pure functions: the plan of variants, scaling, canary steps."""
