"""nbgrader's view of this repository.

solutions/<name>/<name>.ipynb is nbgrader's *source* (the instructor's notebook with
### BEGIN SOLUTION markers) and assignments/<name>/<name>.ipynb its *release* (what
students get). `make assignments` regenerates the release from the source.
"""

import os

c = get_config()  # noqa: F821 (injected by traitlets when nbgrader loads this file)

root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = root
c.CourseDirectory.course_id = "attention-course"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "assignments"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
# the gradebook is instructor state, never committed
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(root, "gradebook.db")

# a student's blank starts by telling them what is missing
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
