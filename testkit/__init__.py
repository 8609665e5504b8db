"""Support for the tests and the benchmarks, not shipped with pybroadway.

- :mod:`testkit.peers`: a private epmd and real erl / elixir nodes driven from Python;
- :mod:`testkit.wait`: waiting for a condition that has no event of its own;
- :mod:`testkit.pages`: the README and the guides, whose blocks the tests run;
- :mod:`testkit.doubles`: the pipelines and the front's producer tests and benchmarks both
  run (a no-op, a CPU-bound one workers import by module path);
- :mod:`testkit.netns`: simulated hosts (network namespaces on a private switch), and
  :mod:`testkit.netns_node`, a small node to run in them.

``tests/`` and ``bench/`` both import it from the repository root.
"""
