{#- The planner settings of the functions every replicated change passes through. Their statements
    read json arrays and transition tables, whose row counts the planner cannot know (it takes 100,
    whatever the values): a JIT compile per statement buys nothing, and neither does a custom plan
    per call (its planning was a tenth of a one-row apply's CPU). -#}
set jit = off
set plan_cache_mode = force_generic_plan
