"""Reports: Markdown/HTML reports from results, and the comparison of devices."""
