"""Operations around the runs: notifications (notify), the terminal summary and tables
(summary), and the HTML report (report).
"""
