"""Reading, cleaning, validating and splitting labeled text datasets."""
