"""Benchmark scripts (run them as files); a package only so that tests can import the ProtoNet baseline."""
