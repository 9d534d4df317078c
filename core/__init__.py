"""STA reproduction suite: data, models, losses, engine, evaluation, tracking, reporting."""
