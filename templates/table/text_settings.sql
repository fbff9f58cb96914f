{#- Text forms of values must not depend on the session: pinned where row images are made and read. -#}
{% for s in text_settings %}
set {{ s[0] | qi }} = {{ s[1] | ql }}
{% endfor %}
