"""The study's report: collect-time analysis, figures, claims and study-to-study comparison."""
