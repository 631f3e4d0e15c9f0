"""PubMed records for the enrich stage: MEDLINE bulk files (and, later, E-utilities)."""
