"""Write the bundled sample (funnelstats/datasets/data/sample/) with funnelstats.simulate.

Run from the repository root: python data/sample/make_sample.py
"""

from pathlib import Path

from funnelstats.datasets import SAMPLE_SETTINGS, simulate

out = Path(__file__).resolve().parents[2] / "funnelstats" / "datasets" / "data" / "sample"
sim = simulate(**SAMPLE_SETTINGS)
sim.export.to_csv(out / "OpportunityHistory.csv", index=False, lineterminator="\n")
sim.opportunities.to_csv(out / "Opportunity.csv", index=False, lineterminator="\n")
print(sim)
print("true conversion:", sim.truth.conversion().round(4).to_dict())
print("true median days in stage:", sim.truth.median_time_in_stage().round(2).to_dict())
