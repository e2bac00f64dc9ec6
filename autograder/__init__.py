"""The course's hidden autograder. Run it as ``python -m autograder grade ...``."""
