"""Control-quality benchmark: one InferenceService, request by request, under each policy.

Modules (each reusable on its own):

* :mod:`.traces`   - request rate over time and seeded Poisson arrivals;
* :mod:`.fleet`    - Triton pods per variant: FIFO queue per model instance, jittered
  service times, optional dynamic batching, model-load delay, drain on removal, and
  the counters and summary quantiles Triton exports;
* :mod:`.prom`     - Prometheus: scrapes, staleness, ``rate()`` and a PromQL subset
  that evaluates the operator's own query templates;
* :mod:`.policies` - Sluice's decision as the operator drives it, HPA, KEDA, an oracle;
* :mod:`.sim`      - the event loop (:func:`.sim.run`), the load test, the scores;
* :mod:`.bench`    - ``make bench-control``: the sweep, control.json, plots, the table.

Adding a scenario
-----------------
1. Build a :class:`.traces.Trace` (a rate per second and the event times after which
   recovery is scored), e.g. ``traces.bursts(...)`` or your own numpy array.
2. Describe the variants that serve it: ``VariantSpec(name, ServiceModel(mean_s, cv,
   dist, batching), load_time_s, weight)``. Several variants share the traffic by
   ``weight`` (a canary at 0.1 next to ``main`` at 0.9); a policy decides replicas per
   variant and may change ``fleet.weights`` through its own hook for A/B or canary
   scenarios.
3. ``sim.Scenario(name, trace, variants, slo_ms=...)`` and ``sim.run(scenario, policy,
   seed)`` for every policy and seed; the same seed gives every policy the same
   requests. Read :class:`.sim.Result` (attainment, recovery attainment, replica-hours,
   actions, timeline). To put it in the published table, add a :class:`.traces.
   TraceSpec` to ``traces.standard`` (or a policy to ``bench.POLICIES`` and ``bench.make_policy``).
"""
