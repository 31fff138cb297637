"""Throwaway-VM tests of kernel features the build machine lacks (IPVS, see kit.py and ipvs_scenario.py)."""
